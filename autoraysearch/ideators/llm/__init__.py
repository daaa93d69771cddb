"""The LLM ideators: HTTP and command clients, the prompt, reading and checking answers."""
