"""Studio: the Gradio app raters and leads work in. Never imports torch, transformers or trl."""
