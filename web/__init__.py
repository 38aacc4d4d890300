"""The call page: plain HTML, CSS and JavaScript, installed as the package ``voice.web``."""
