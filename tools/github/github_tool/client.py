"""GitHub's REST API for agents. The token is injected by the tool's gateway."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Optional

API = "https://api.github.com"


class GitHubError(RuntimeError):
    """GitHub (or the tool's gateway) refused the request."""


def _request(method: str, path: str, body: Optional[dict] = None, query: Optional[dict] = None):
    url = API + path
    if query:
        url += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Accept", "application/vnd.github+json")
    req.add_header("X-GitHub-Api-Version", "2022-11-28")
    req.add_header("User-Agent", "centaur-github-tool")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=25) as resp:
            return json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as e:
        text = e.read().decode("utf-8", "replace")[:500]
        reason = e.headers.get("x-centaur-reason")
        if reason:
            raise GitHubError(f"the tool's gateway refused {method} {url}: {reason}") from None
        try:
            text = json.loads(text).get("message", text)
        except (ValueError, AttributeError):
            pass
        raise GitHubError(f"GitHub answered {e.code} to {method} {path}: {text}") from None
    except urllib.error.URLError as e:
        raise GitHubError(f"cannot reach GitHub ({method} {path}): {e.reason}") from None


def _item(issue: dict) -> dict:
    return {
        "number": issue.get("number"),
        "title": issue.get("title"),
        "state": issue.get("state"),
        "url": issue.get("html_url"),
        "user": (issue.get("user") or {}).get("login"),
        "pull_request": "pull_request" in issue,
    }


class Client:
    """GitHub: search issues and pull requests, read files, comment."""

    def _search(self, kind: str, query: str, repo: Optional[str], state: Optional[str], limit: int) -> list:
        q = [query, f"is:{kind}"]
        if repo:
            q.append(f"repo:{repo}")
        if state:
            q.append(f"state:{state}")
        found = _request("GET", "/search/issues", query={"q": " ".join(q), "per_page": max(1, min(limit, 100))})
        return [_item(i) for i in found.get("items", [])][:limit]

    def search_issues(self, query: str, repo: Optional[str] = None, state: Optional[str] = None, limit: int = 10) -> list:
        """Search issues (not pull requests).

        Args:
            query: GitHub search terms, e.g. "crash on start label:bug".
            repo: owner/name to search in.
            state: open or closed.
            limit: at most this many results (1-100).
        """
        return self._search("issue", query, repo, state, limit)

    def search_pull_requests(self, query: str, repo: Optional[str] = None, state: Optional[str] = None, limit: int = 10) -> list:
        """Search pull requests.

        Args:
            query: GitHub search terms.
            repo: owner/name to search in.
            state: open or closed.
            limit: at most this many results (1-100).
        """
        return self._search("pr", query, repo, state, limit)

    def read_file(self, repo: str, path: str, ref: Optional[str] = None) -> dict:
        """Read a text file from a repository.

        Args:
            repo: owner/name.
            path: the file's path in the repository.
            ref: a branch, tag or commit (default: the default branch).
        """
        quoted = urllib.parse.quote(path.lstrip("/"))
        found = _request("GET", f"/repos/{repo}/contents/{quoted}", query={"ref": ref})
        if not isinstance(found, dict) or found.get("type") != "file":
            raise GitHubError(f"{repo}/{path} is not a file")
        text = base64.b64decode(found.get("content") or "").decode("utf-8", "replace")
        return {"path": found.get("path"), "sha": found.get("sha"), "size": found.get("size"), "text": text}

    def comment(self, repo: str, number: int, body: str) -> dict:
        """Comment on an issue or pull request.

        Args:
            repo: owner/name.
            number: the issue or pull request number.
            body: the comment (Markdown).
        """
        made = _request("POST", f"/repos/{repo}/issues/{number}/comments", body={"body": body})
        return {"id": made.get("id"), "url": made.get("html_url")}
