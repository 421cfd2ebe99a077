"""The math of classifier-free guidance: the UNet, the diffusion, the CFG rule and its variants, the samplers.

No files, no flags, no progress bars: functions of tensors. Imports nothing from cfgutils but ``errors``.
"""
