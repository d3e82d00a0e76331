"""The recorder: records consultations ' audio where LiveKit Egress does not run (docs/recording.md)."""
