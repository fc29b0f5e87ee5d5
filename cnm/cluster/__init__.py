"""Cluster plumbing for multi-host operation.

    etcd_server.EtcdMember / start_cluster   run etcd members as processes (tests, labs)
    lease.NodeLease                          a daemon's kept-alive etcd lease

The cluster store itself is `cnm.store.etcd.EtcdStore`.
"""
