module spendgate.bench/sessions

go 1.22
