module github.com/moechat/moechat/clients/go

go 1.22
