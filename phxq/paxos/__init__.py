"""phxq.paxos — see DESIGN.md §2."""
