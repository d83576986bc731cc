"""The pull doctor as a feature: how containerd pulls for CRI and what bounds a pull
(pullpath), and the whole change that applies the findings in one round (advice)."""
