"""Host-side compilers (docs/compiler.md): ``programs`` (single-channel GEMV / QK^T programs),
``attention`` (one decode step of attention on a module, with data), ``llm`` (one decode step
of a whole LLM, compressed, for the performance model), ``pages`` (the page allocator),
``host`` (pacing a program's pushes, running it on the golden model)."""
