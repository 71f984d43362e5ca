"""The copier templates that `scaffold` renders (shipped as ``scaffold.templates``)."""
