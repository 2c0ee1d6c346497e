"""Model packaging: flavors, signatures, the environment a model needs, and loading by URI."""
