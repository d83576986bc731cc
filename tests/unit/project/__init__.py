"""The repository as a whole: the layers' contract, deploy/, the README's commands,
the generated protos, the fakes held to the real things' contract."""
