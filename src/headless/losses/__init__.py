"""Training losses: Contrastive Weight Tying and its vanilla twins, all returning `LossOutput`."""

from headless.losses.cwt import LossOutput, cwt_loss, linear_logsumexp
from headless.losses.vanilla import ce_plus_cwt_loss, nce_untied_loss, vanilla_ce_loss

__all__ = ["LossOutput", "cwt_loss", "vanilla_ce_loss", "ce_plus_cwt_loss", "nce_untied_loss",
           "linear_logsumexp"]
