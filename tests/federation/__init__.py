"""Federation tests: a real mosquitto broker and real nodes."""
