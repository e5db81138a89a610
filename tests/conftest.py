"""Shared fixtures. Keep everything tiny: D = 16, hidden 8, attention 4, 4 bins, bags of 1–64 patches."""

import os

# issue 7: the service's default STEPH_INFERENCE_DTYPE is "auto" (bfloat16 on CPUs with native bf16). Tests compare
# predictions with float32 forwards, so they run in float32 unless a test sets another dtype itself.
os.environ.setdefault("STEPH_INFERENCE_DTYPE", "float32")
