"""Hands a summary on. Its one step is retried with backoff if it fails (a chat API that
is down for a minute does not lose the summary); the run is suspended between attempts."""

from centaur_sdk.workflow import RetryPolicy

WORKFLOW_NAME = "notify"


def deliver(summary, day):
    """Where a real deployment posts to its chat (through the worker's gateway, which holds
    the token); here the receipt is the result."""
    return {"delivered": True, "day": day, "characters": len(summary)}


async def handler(inp, ctx):
    return await ctx.step(
        "deliver",
        lambda: deliver(inp["summary"], inp["day"]),
        retry=RetryPolicy(limit=5, delay=2, backoff="exponential", max_delay=60),
    )
