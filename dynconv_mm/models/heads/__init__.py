"""Heads whose convolutions take a ``conv_cfg`` (MMPose keypoint heads);
registered only when MMPose is installed."""
