"""Host-side compiler: channel programs, decode attention (HFP/TCP, static/DPA), page allocation, LLM decode steps."""
