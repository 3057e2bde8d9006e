"""The review service: a queue and a web page where people confirm or overturn what the matchers
flag, and banks that learn from their verdicts (issue 16).

Reading order: `db` (tables and migrations), `intake` (decisions and reports become cases),
`queue` (priority, leases), `verdicts` (one transaction, then the bank and the message),
`preview` (blurred media for reviewers), `auth`, `web` (the pages), `service` (`vigil review`).
"""
