"""The contract client and server share: event schema, action vocabulary, model."""
