"""Resource Abstraction Layer: discover, normalize, price and watch the health of every
resource Tessera can place work on. Plain modules; the Faust agent is agents/resources.py."""
