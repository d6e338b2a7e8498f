"""Support code for the tests (not collected: no module here is named ``test_*``)."""
