"""Test support that ships with the adapters: fakes, transcripts and the conformance suite.

Everything here is for tests. The fake engines are fakes: they run no model and only
replay what a transcript tells them.

- `transcripts`: the transcript type (frames plus a terminal behaviour) and SSE helpers.
- `fake_server`, `fake_engines`: fake llama-server, OpenAI-compatible (llama_cpp.server
  shaped), vLLM and TGI servers (aiohttp apps on 127.0.0.1, port 0).
- `llamacpp_transcripts`, `openai_transcripts`, `vllm_transcripts`: reconstructed from
  the engine reference's wire facts (named `reconstructed_*`); `tgi_transcripts`: built
  from real recorded TGI responses in `recordings/tgi/` (named `recorded_tgi_*`).
- `scenarios`, `conformance`, `targets`, `processes`: the shared conformance suite
  (ADP-07), the targets it runs against, and real engine processes for it.
- `fixtures`: pytest fixtures (`http_session` closes the shared connection pool).
"""
