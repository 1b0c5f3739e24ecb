"""Lambda-like functions: ``def handler(event, context)`` run in their own process per invocation."""
