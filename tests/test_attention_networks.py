"""The networks' parity tests (against lvdm / diffusers / transformers / OpenCLIP references)
re-run on each attention path. The test modules themselves run on the default ("auto":
blockwise on a CPU); ``SZERO_ATTENTION=<path>`` runs any test file on another path.

``blockwise_small`` forces many small blocks (several query, key and batch blocks, padded
tails, FeedForward in chunks), so every loop of the memory-efficient path is exercised;
``full`` (the original path) and ``xla`` (``jax.nn.dot_product_attention``) are slow tests.
"""
import pytest

from szero_jax.models.attention import attention_settings
# Re-exported so that pytest runs them here again, under the fixture below.
from tests.test_clip import test_hf_text_parity, test_hf_vision_parity, test_openclip_fixture_parity  # noqa: F401
from tests.test_resampler import test_tiny_parity_with_lvdm as test_resampler_parity  # noqa: F401
from tests.test_unet2d import test_unet2d_matches_diffusers_and_takes_cross_view  # noqa: F401
from tests.test_unet3d import test_tiny_parity_with_lvdm as test_unet3d_parity  # noqa: F401
from tests.test_unet3d import tiny  # noqa: F401  (the fixture test_unet3d_parity takes)
from tests.test_unet_st import test_unet_st_matches_diffusers_and_takes_cross_view  # noqa: F401
from tests.test_vae import (test_diffusers_autoencoder_kl_parity,  # noqa: F401
                            test_lvdm_autoencoder_matches_fixture,
                            test_temporal_decoder_parity_and_chunked_video)

PATHS = {
    "blockwise_small": dict(implementation="blockwise", query_chunk=24, key_chunk=20,
                            block_bytes=1 << 16, ff_block_bytes=1 << 16),
    "full": dict(implementation="full", ff_block_bytes=0),
    "xla": dict(implementation="xla"),
}


@pytest.fixture(autouse=True, params=[
    "blockwise_small",
    pytest.param("full", marks=pytest.mark.slow),
    pytest.param("xla", marks=pytest.mark.slow)])
def attention_path(request):
    with attention_settings(**PATHS[request.param]):
        yield request.param
