"""The bundled demo: sample feeds on 127.0.0.1, a webhook receiver and the pipeline under the supervisor."""
