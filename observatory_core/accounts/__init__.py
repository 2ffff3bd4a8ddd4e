"""Who is asking and what they may do: users, log-in, sessions, API-key guards, roles and
permissions, what each role may see, orgs and projects, and the audit trail.

`permissions` is a leaf (plain declarations); the rest may import `base`, `storage` and the
semantic declarations.
"""
