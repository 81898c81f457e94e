"""The command-line layers: one module per command, each over the library; they import
:mod:`uniremoval.commands.common` and the library, never each other."""
