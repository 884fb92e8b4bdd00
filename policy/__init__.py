"""The contract client and server share: event schema, vocabulary, model, round, state root."""
