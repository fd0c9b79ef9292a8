"""Use the node from other agents: an MCP server and LangChain tools, both under the node's policy.

Every call goes through the node's router as a client of its own kind (``mcp``,
``langchain``), so roles, the assistant's policy, approvals and the audit log
apply exactly as they do to the built-in assistant.
"""
