"""Options that slim the heavy models for tests (same architecture, narrower or lighter encoder)."""

# Light options per model: same architecture, narrower or smaller where the default is slow on a CPU.
LIGHT: dict[str, dict] = {
    "fcn32s": {"fc_channels": 64},
    "fcn16s": {"fc_channels": 64},
    "fcn8s": {"fc_channels": 64},
    "deconvnet": {"fc_channels": 64},
    "dilated_frontend": {"fc_channels": 64},
    "deeplabv3": {"backbone": "resnet18"},
    "deeplabv3plus": {"backbone": "mobilenet_v2"},
    "encoder_unet": {"backbone": "resnet18"},
    "fcn_resnet_dilated": {"backbone": "resnet18"},
    "unet": {"base_channels": 8},
}
