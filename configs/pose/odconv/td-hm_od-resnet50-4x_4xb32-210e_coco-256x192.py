# ODConv (Li, Zhou, Yao, ICLR 2022) 4x in ResNet-50 with SimpleBaseline's
# head ("type A": dynamic backbone, static deconvolution head, the
# setting Dynamic Convolution uses for ResNet). ODConv's ResNet placement:
# every conv inside the residual blocks; stem and downsample static. The
# static counterpart is MMPose's td-hm_res50_8xb64-210e_coco-256x192.
_base_ = '../_base_/td-hm_resnet50.py'
model = dict(
    backbone=dict(
        dynamic_conv_cfg=dict(
            type='ODConv', num_kernels=4,
            attention_norm_cfg=dict(type='BN'))))
# The attention's BatchNorm normalises one pooled vector per image: a last
# batch of one image cannot train it, so the epoch's remainder is dropped.
train_dataloader = dict(drop_last=True)
custom_hooks = [
    dict(type='SyncBuffersHook'),
    # ODConv's ImageNet schedule: temperature 30 -> 1 over 10 epochs.
    dict(type='TemperatureAnnealingHook', start=30.0, end=1.0, epochs=10)
]
