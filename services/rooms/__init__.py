"""The rooms service: rooms, participants, data messages, egress and ingress, per tenant."""
