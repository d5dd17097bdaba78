"""Decoder LLMs as edgecc programs: prefill / decode with a static KV cache, built for the
TVM targets and run by a token ``Generator`` (work in progress: see issue 17)."""
