"""The tiled tensor-core GEMM family: template, space, parameters, reference."""
