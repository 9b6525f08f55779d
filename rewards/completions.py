"""The text a reward reads from one TRL completion, whichever of TRL's two formats it arrives in."""


def completion_text(completion: object) -> str:
    """Return the text of a completion: a plain string, or the last assistant message of a conversation.

    TRL passes plain strings for "standard" datasets and lists of chat messages for "conversational" ones.
    The answer lives in the last assistant message: in a tool-using completion, earlier messages are
    intermediate steps and tool results. Content given as a list of parts (the multimodal chat format) is
    read from its text parts. Anything else raises TypeError, so a malformed row becomes a counted reward
    error rather than a silently scored `repr`.
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and all(isinstance(message, dict) for message in completion):
        answer_messages = [message for message in completion if message.get("role", "assistant") == "assistant"]
        if answer_messages:
            content = answer_messages[-1].get("content")
            if content is None:  # an assistant turn that only calls a tool
                return ""
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    raise TypeError(f"a completion must be a string or a list of chat messages, got {type(completion).__name__}")
