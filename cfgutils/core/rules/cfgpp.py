"""CFG++: re-noise with the unconditional noise. Paper: https://arxiv.org/abs/2406.08070"""

from __future__ import annotations

import math

from ...errors import finite_number
from ..diffusion import half_log_snr
from ..guidance import Guidance


class CFGPlusPlus(Guidance):
    """CFG++ (Chung et al. 2024, "CFG++: Manifold-constrained Classifier Free Guidance for Diffusion Models") (08).

    The scale is lambda in [0, 1] (passed as s): x0 = x0_u + lambda (x0_c - x0_u), and the sampler then
    re-noises this x0 with the *unconditional* noise eps_u instead of the guided eps (DDIM:
    x_prev = sqrt(ab_prev) x0_lambda + sqrt(1 - ab_prev) eps_u). Plain CFG's guided eps at large s points
    off the data manifold and the error compounds; CFG++ stays on it. Written out, a CFG++ DDIM step is a
    plain CFG step at s_k = lambda / (1 - exp(-h_k)), h_k the step's gain in half-log-SNR
    (:func:`cfgpp_scale_factors`): 1 x lambda at the first and last step, several times lambda in between,
    and more the more steps the sampler takes. lambda = 0 is unconditional sampling (plain CFG at s = 0).
    DDPM and DPM-Solver++ take their step from x0_lambda re-noised with eps_u (:meth:`step_from`), which is
    DDIM's rule applied to them. DPM-Solver++(2M)'s second-order term follows the official CFG++ solver
    (``sample_dpmpp_2m_cfg_pp``): it extrapolates from the current guided x0 and the *previous unconditional*
    x0, (1 - e^-h) / (2 r) (x0_lambda - x0_u,prev), not from the previous guided x0.
    """

    name = "cfgpp"
    renoise_with_negative = True
    scale_range = (0.0, 1.0)

    def validate_scale(self, scale):
        return finite_number(scale, "cfg++ scale lambda (its s)", *self.scale_range)

    def needs_both(self, scale, context):
        return scale != 0.0  # lambda = 1 still re-noises with eps_u

    def step_from(self, x_t, eps, x0, context):
        """x0_lambda re-noised with eps_u; remembers x0_u, the x0 that eps_u implies, for :meth:`after_step`."""
        signal = math.sqrt(context.alpha_bar)
        context.state["x0_negative"] = (x_t - context.noise_std * eps) / signal
        return signal * x0 + context.noise_std * eps

    def after_step(self, run, context):
        """DPM-Solver++(2M) as the official CFG++ solver: the next step extrapolates from the negative x0."""
        if getattr(run, "history", None) is not None:
            run.history = (context.state.pop("x0_negative"), run.history[1])


def cfgpp_scale_factors(diffusion, timesteps: list[int]) -> list[float]:
    """Per step of a sampler visiting ``timesteps``, the plain-CFG scale one unit of CFG++'s lambda amounts to:
    1 / (1 - exp(-h_k)), h_k = half-log-SNR(t_prev) - half-log-SNR(t); exact for DDIM (eta = 0) and
    first-order DPM-Solver++, 1 at the last step (to clean data) (08)."""
    following = [*timesteps[1:], -1]  # -1: the last step goes to clean data, where the half-log-SNR is infinite
    return [1.0 / -math.expm1(-(half_log_snr(diffusion, t_prev) - half_log_snr(diffusion, t)))
            for t, t_prev in zip(timesteps, following)]
