"""cpullm's OpenAI-compatible HTTP server (FastAPI + uvicorn), ready for KServe.

Modules: ``settings`` (flags > ``CPULLM_*`` env > defaults), ``app`` (the app factory and health
routes), ``openai_api`` (the OpenAI routes), ``schemas`` (request bodies), ``async_engine`` (the engine
thread and its queues), ``generation`` (one HTTP request's sequences), ``errors``, ``auth``, ``metrics``.
Needs the ``server`` extra: ``pip install 'cpullm[server]'``.
"""
