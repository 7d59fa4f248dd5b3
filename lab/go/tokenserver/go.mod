module manifest.lab/tokenserver

go 1.26.0
