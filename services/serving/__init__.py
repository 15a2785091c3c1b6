"""Serving: answers HTTP inference requests with each model's champion, loaded off the
request path, verified before unpickling and swapped atomically, and publishes every
prediction on the predictions topic without the request waiting on Kafka."""
