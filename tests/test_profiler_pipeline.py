"""The server generates with the profiler's pipeline driving: same seed and prompt, the same image."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("diffusers", reason="needs genedge[profile]")


@pytest.mark.slow
def test_a_served_image_is_the_profiled_image_of_the_same_seed_and_prompt() -> None:
    from genedge.profiler import Clock, Monitor, load_pipeline, measure_call, torch_device
    from genedge.serve.spec import ServedModel
    from genedge.serve.worker import DeviceWorker

    device = torch_device("cpu")
    prompt, seed = "a red cube on a wooden table", 3
    pipe = load_pipeline("replica:tiny", device=device, dtype="float32")
    with Monitor(None) as monitor:
        profiled, measurement = measure_call(
            pipe,
            [prompt],
            steps=3,
            seed=seed,
            resolution=64,
            guidance_scale=7.5,
            device=device,
            clock=Clock(device),
            monitor=monitor,
        )
    served_model = ServedModel(
        key="replica:tiny",
        spec="replica:tiny",
        replica=0,
        device=0,
        steps=3,
        share=1.0,
        max_batch=1,
        service_s=1.0,
        queue_bound=4,
        resolution=64,
        guidance_scale=7.5,
        dtype="float32",
        scheduler=None,
    )
    worker = DeviceWorker([served_model], device="cpu", warmup=False)
    try:
        served = worker.submit("replica:tiny", prompt, seed=seed).result(timeout=300)
        other_seed = worker.submit("replica:tiny", prompt, seed=seed + 1).result(timeout=300)
    finally:
        worker.close()

    def pixels(png: bytes) -> np.ndarray:
        return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)

    assert measurement.num_timesteps == len(measurement.step_latencies_s) == 3
    expected = np.asarray(profiled[0].convert("RGB"), dtype=np.int16)
    # Both run the same calls on the same weights; threads may sum in another order, so allow one level.
    assert np.abs(pixels(served.png) - expected).max() <= 1
    assert np.abs(pixels(other_seed.png) - expected).max() > 1  # the comparison can tell images apart
