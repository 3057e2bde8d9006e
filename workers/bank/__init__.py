"""The hash bank: banks (named lists with an action) and their entries, stored in Redis."""
from workers.bank.model import ACTIONS, Bank, Entry  # noqa: F401
from workers.bank.store import BankStore, BankError, Change  # noqa: F401
