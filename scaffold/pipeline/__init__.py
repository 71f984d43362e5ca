"""The commands as one chain: resolve -> analyse -> plan -> render -> write -> verify."""
