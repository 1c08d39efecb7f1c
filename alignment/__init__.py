"""Alignment: recipes -> TRL trainers, evaluation and lineage. Never imports gradio."""
