"""Host integration, declarative: sengd's nftables table and conntrack flushing.

- `sengd.net.sets`: set names and membership (pure);
- `sengd.net.libnftables`: the libnftables binding (JSON in, JSON out);
- `sengd.net.conntrack`: conntrack entries of released addresses, over ctnetlink;
- `sengd.net.nft`: the `Firewall` that ties them to the gateway's sessions.
"""

from sengd.net.nft import Firewall, FirewallError, LiveState, member_of

__all__ = ["Firewall", "FirewallError", "LiveState", "member_of"]
