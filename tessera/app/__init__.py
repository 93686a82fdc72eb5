"""The application shell: the ``tessera`` CLI, the demo, the in-process pipeline, the
HTML report and the SQL endpoint. It wires the layers below together and holds no
domain rule of its own."""
