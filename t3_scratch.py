import time

from generator import verify
from templates.attention.family import FAMILY
from tessera_core.types import AttentionProblem as P

for p in [
    P(3, 4, 77, 130, 64, heads_kv=2, layout="bshd", varlen=True, causal=True),
    P(
        3,
        2,
        90,
        60,
        40,
        layout="bshd",
        varlen=True,
        window_left=10,
        window_right=3,
        alibi="batch_heads",
        softcap=5.0,
    ),
]:
    t = time.time()
    c = FAMILY.default_config(p, "sm_90")
    v = verify.verify_config(p, c, seed=2, arch="sm_90")
    print(p.kernel_key("sm_90"), v.passed, v.rel_err, v.detail, time.time() - t)
