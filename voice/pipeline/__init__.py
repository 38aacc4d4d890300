"""The middle: a :class:`~voice.pipeline.session.Session` per caller, its replies, and the
sink protocol the reply writes audio to. Nothing here imports a transport or the app."""
