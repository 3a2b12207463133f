module sbm.local/pause

go 1.21
