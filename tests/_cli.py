"""Arguments of `pixelwise train` for a one-step run of a tiny U-Net, shared by the command-line tests."""

# --workers stays at index 8-9 (tests swap in other worker counts); --set comes last so a test can append keys.
TINY_TRAIN = ["--steps", "1", "--batch-size", "2", "--crop-size", "32", "32", "--quiet", "--workers", "0",
              "--set", "model_kwargs.base_channels=4", "model_kwargs.depth=2", "eval_batch_size=2"]
