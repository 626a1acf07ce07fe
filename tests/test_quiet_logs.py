"""gensis silences Lightning's logger advert and torch's LeafSpec deprecation, and nothing else."""

import logging
import warnings

from gensis.quiet_logs import quiet_third_party


def test_the_leafspec_deprecation_is_silenced_and_other_warnings_are_not():
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        from torch.utils._pytree import LeafSpec

        LeafSpec()                                     # without the filter torch warns (the case can fail)
        assert any("LeafSpec" in str(w.message) for w in seen)
        seen.clear()
        quiet_third_party()
        LeafSpec()
        warnings.warn("a warning gensis users should still see", UserWarning)
        assert [str(w.message) for w in seen] == ["a warning gensis users should still see"]


def test_lightnings_advert_is_dropped_and_its_other_info_lines_kept(caplog):
    from lightning.pytorch.utilities.rank_zero import rank_zero_info

    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    for f in [f for f in logger.filters if type(f).__name__ == "_DropAdverts"]:
        logger.removeFilter(f)                         # as before gensis ran: the advert reaches the log
    advert = "💡 Tip: For seamless cloud logging, try installing something"
    with caplog.at_level(logging.INFO):
        rank_zero_info(advert)
        assert [r.getMessage() for r in caplog.records] == [advert]
        caplog.clear()
        quiet_third_party()
        quiet_third_party()                            # twice: still one filter
        rank_zero_info(advert)
        rank_zero_info("GPU available: False, used: False")
    assert [r.getMessage() for r in caplog.records] == ["GPU available: False, used: False"]
    assert sum(type(f).__name__ == "_DropAdverts" for f in logger.filters) == 1
