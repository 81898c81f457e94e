"""``uniremoval-app``: the service layer (:mod:`.service`, no UI) and the Gradio page (:mod:`.page`)."""
