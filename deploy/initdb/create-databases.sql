-- Run once by the postgres image when its volume is new: the catalog and the authentication
-- database of compose.yml.
CREATE DATABASE tiled_catalog OWNER tiled;
CREATE DATABASE tiled_authn OWNER tiled;
