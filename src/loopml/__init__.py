"""LoopML: a self-hosted machine-learning platform.

Importing this package is cheap: it pulls in neither Keras nor TensorFlow.
"""

__version__ = "0.1.0"
__all__ = ["Client", "__version__"]


def __getattr__(name: str):  # lazy: `import loopml` must stay instant
    if name == "Client":
        from loopml.sdk.client import Client

        return Client
    raise AttributeError(name)
